"""road_ds: ROaD (Robustly Optimized and Distilled) training of NLU encoders on DeepSpeed."""

__version__ = "0.1.0"
