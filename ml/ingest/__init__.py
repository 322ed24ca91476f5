"""Raw data in: the simulator of the demo business, its daily loader, and CSV files as raw tables."""
