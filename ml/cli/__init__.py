"""`python -m ml`: the command line for every pipeline stage."""
