"""On-call tools: look at dead-letter queues and payment orders, and redrive them safely (see ops/README.md)."""
