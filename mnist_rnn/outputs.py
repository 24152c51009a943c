"""The names of what a training run writes into its directory, in one place: the run, its
exports, its report and the hand-over of the directory all use these."""

MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"
METRICS_FILE = "metrics.json"
REPORT_FILE = "evaluation.json"
CONFUSION_PNG = "confusion_matrix.png"
ERRORS_PNG = "confident_errors.png"
ACCURACY_PNG = "accuracy_by_step.png"
LOGS_DIR = "logs"
BACKUP_DIR = "backup"
STATE_FILE = "state.json"  # In BACKUP_DIR.

# Everything a run writes besides its lock, the backup last (it says whose the rest is).
OUTPUTS = (MODEL_FILE, SAVED_MODEL_DIR, TFLITE_FILE, TFLITE_INT8_FILE, METRICS_FILE,
           REPORT_FILE, CONFUSION_PNG, ERRORS_PNG, ACCURACY_PNG, LOGS_DIR, BACKUP_DIR)
DIRECTORIES = (SAVED_MODEL_DIR, LOGS_DIR, BACKUP_DIR)
