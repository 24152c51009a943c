"""The trained model for others: SavedModel, .tflite, loading any format, answers, the demo."""
