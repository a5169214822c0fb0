"""Generated gRPC code for proto/ngram/v1 (see generate.py). Do not edit by hand."""
