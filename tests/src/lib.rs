//! Helpers shared by the integration tests: tiny generated inputs.
