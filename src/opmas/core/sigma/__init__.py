"""Sigma rules: line-tracking YAML loading, parsing (pySigma), compiling to matchers, prefiltering."""
