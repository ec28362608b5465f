# The CSL adversarial-robustness study. A table of contents: every stage is one rules file,
# every helper lives in workflow/rules/common.smk, all logic in the `pipeline` package.
from snakemake.utils import min_version

min_version("9.0")


# The default study, unless a study file is given with --configfile: that file then replaces it
# (Snakemake would otherwise merge the two, and it does not forward --replace-workflow-config to
# cluster jobs, so the choice is made here, identically in every job).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


report: report_description()  # workflow/report/workflow.rst, with the claims' verdicts once the report stage has run


include: "workflow/rules/embed.smk"
include: "workflow/rules/decode.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/mine.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/match.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analyse.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
