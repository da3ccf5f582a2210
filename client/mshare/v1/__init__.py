"""Generated from proto/mshare/v1 by `make proto`; never edit by hand."""
