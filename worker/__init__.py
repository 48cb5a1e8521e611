"""vitsweep worker: claims queued trials from the SQL store, trains them and reports to Optuna and MLflow."""
