"""What the test suites share: fixtures (a pytest plugin) and helpers that speak to the API."""
