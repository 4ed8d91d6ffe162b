"""artgan studio: explore a trained model, or a run in progress, in the browser
(`python generate.py studio --model M`). Pictures come from gan.sampling, gan.project,
gan.refine and gan.finish, exactly as generate.py makes them; each shows its command."""
