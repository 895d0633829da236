"""Everything from bytes on disk to a ViewBatch on the training device."""
