"""vitsweep server: REST API, experiment specs and the SQL store that doubles as the trial queue."""
