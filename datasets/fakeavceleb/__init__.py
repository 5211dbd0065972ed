"""The `fakeavceleb` dataset (FakeAVCeleb v1.2, manual download)."""
