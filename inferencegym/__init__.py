"""The ``inferencegym`` command line: every tool of the project behind one entry point.

    inferencegym --help                 # the subcommands
    inferencegym COMMAND --help         # one subcommand's flags

The libraries (``gymjax``, ``ppo``) compute and return; the commands here parse flags, choose
output paths, print and plot (through :mod:`gymjax.report`).
"""
