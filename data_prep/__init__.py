"""data_prep: turn an art source (HF dataset, folder, procedural) into a prepared store."""
