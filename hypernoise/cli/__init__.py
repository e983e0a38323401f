"""The command line: parses arguments into config objects and calls library functions."""
