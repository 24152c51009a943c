"""The static and the dynamic LSTM, and Predictor: how any trained model answers."""
