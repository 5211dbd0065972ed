"""The `videofolder` dataset: any folder of videos, optionally labelled by a CSV."""
