"""Grid carbon intensity providers and PUE."""
