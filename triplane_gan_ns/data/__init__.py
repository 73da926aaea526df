"""Data: dataparsers (what images exist, their classes), the dataset (decoding) and the datamanager (batches)."""
