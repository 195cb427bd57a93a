"""Ship: bundles, the helper process, uploads and the directory budget."""
