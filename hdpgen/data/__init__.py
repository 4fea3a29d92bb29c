"""Data files shipped with hdpgen (evaluation sentences)."""
