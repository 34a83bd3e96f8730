"""The least an API handler built on the design card's packages imports: boto3, Powertools' Logger and Metrics,
and one pydantic model (pydantic builds its schema machinery with the first model a process defines).

benchmarks/cold_start.py imports it beside the handlers, on the base layer, and prints its ratio as the floor
under every handler that validates with pydantic at import.
"""

import boto3  # noqa: F401
from aws_lambda_powertools import Logger, Metrics  # noqa: F401
from pydantic import BaseModel


class Floor(BaseModel):
    name: str
    amount_minor: int
