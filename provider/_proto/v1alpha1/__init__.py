"""Generated v1alpha1 stubs; regenerate with `make proto`."""
