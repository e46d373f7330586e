"""Training recipes of the shipped models (`speech train ...`); they run on the lent GPU or on CPU."""
