"""Code that runs inside the engines: device pinning, process group, workloads, strategies and
the training loop. Imports torch, never IPython, ipywidgets or plotly."""
