"""Data shared by bench, optimize and explain: input files and datasets, quality metrics."""
