"""Generators other projects can use too: phantoms, native-layout writers, perturbations, bad inputs."""
