"""Reports: the JSON record of a profile, the terminal table and the PNG heatmaps."""
