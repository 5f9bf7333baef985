"""Value: RFM ranks and the lifetime outlook (BG/NBD and Gamma-Gamma)."""
