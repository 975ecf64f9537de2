"""serving: batch scoring (score), online serving (app over server, with spec, loaded, compiled, payload,
metrics and servinglog), and the low-confidence review queue (review)."""
