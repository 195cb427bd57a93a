"""Capture: options, the native job, triggers and the watchdog."""
