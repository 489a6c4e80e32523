"""What the command-line tools (``tools/``) and demos (``demo/``) share; the model, its ops,
checkpoint loading, data transforms and deployment rewrites live beside this package.

Nothing here is imported by ``import ravlt_dense`` or by a config: each tool imports what it
uses.
"""
