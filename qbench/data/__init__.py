"""qbench.data: finding, fetching, checking and decoding the data."""
