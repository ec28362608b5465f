"""`python -m pipeline.report ...`: the report stage's command line."""

from pipeline.report import main

main()
