"""artgan's GAN core: models, losses, augmentation, training, sampling, style refinement."""
