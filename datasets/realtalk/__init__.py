"""The `realtalk` dataset: real and AI-generated talking faces from public demo media."""
