"""Ask what the model and its SAE features do on one prompt: sae-ooc query --run RUN "e12 r3 r7".

Prints the prompt, its true answer and bridge when it is a fact of the task, the model's top answers, and per
hook the features that move the answer's logit most (activation x gradient), each with its label. --full lists
every hook and position with top-activating task prompts and promoted answers; --json prints every number.
The first query of a run describes every SAE feature and indexes every task prompt once (RUN/query_cache/); later
compact queries of a task prompt are read from that index without loading the model.
"""

import json

from sae_ooc.commands import bounded

COMMON = {"force": False, "overrides": False, "config": False}  # query reads the run as it is: nothing to set or force
SHARED_LOCK = True  # it reads the run (and adds to its own cache): beside other queries, not beside a writer
MAX_EXAMPLES = 10  # = sae_ooc.saes.features.DESCRIBE_EXAMPLES, the examples cached per feature (not imported: torch)


def add_arguments(p) -> None:
    p.add_argument("prompt", help='an entity then one or two relations, e.g. "e12 r3 r7" (two-hop) or "e12 r3" (atomic)')
    p.add_argument("--target", default=None, help="the answer entity to attribute to, e.g. e40 (default: the model's top answer)")
    p.add_argument("--top", type=bounded(int, 1), default=3, help="answers listed, and features per hook (per hook and position with --full)")
    p.add_argument("--examples", type=bounded(int, 0, MAX_EXAMPLES), default=3, help="top-activating task prompts listed per feature (--full, --json)")
    p.add_argument("--full", action="store_true", help="every hook and position: features by activation and by attribution, with examples")
    p.add_argument("--json", action="store_true", help="print every number as JSON, for scripts")


def main(run, args) -> int:
    from sae_ooc.query.index import lookup
    from sae_ooc.query.view import format_query

    res = None
    if not (args.full or args.json or args.target is not None):  # the compact view of a task prompt: from the index, without torch
        res = lookup(run, args.prompt, args.top)
    if res is None:
        from sae_ooc.query.session import query

        res = query(run, args.prompt, target=args.target, top=args.top, n_examples=args.examples)
    # flushed here, inside the CLI's error handler, so that a reader that left (`| head`) ends the command quietly
    print(json.dumps(res.to_json(), indent=1) if args.json else format_query(res, full=args.full), flush=True)
    return 0
