"""``attnlab serve``: a local web viewer of one model's attention (head grid, attention maps, steering side by side,
generation timeline, share as one HTML file). The page is plain JS + canvas shipped in ``static/``: no build step,
no CDN, works offline. Needs the ``serve`` extra (``pip install 'attnlab[serve]'``) for :mod:`attnlab.serve.app`;
:mod:`attnlab.serve.views` and :mod:`attnlab.serve.export` need only attnlab itself.
"""
