"""`python -m pipeline.mine ...`: the mine stage's command line."""

from pipeline.mine import main

main()
