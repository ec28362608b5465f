"""`python -m pipeline.plan`."""

from pipeline.plan.summary import main

main()
