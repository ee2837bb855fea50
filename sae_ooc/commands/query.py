"""Ask what the model and its SAE features do on one prompt: sae-ooc query --run RUN "e12 r3 r7".

Prints the top answers, then per hook and position the top features by activation and by attribution
to the predicted answer (or --target), each with its label, top-activating task prompts and promoted answers.
"""

import json

COMMON = {"force": False}


def add_arguments(p) -> None:
    p.add_argument("prompt", help='token names separated by spaces, e.g. "e12 r3 r7" (two-hop) or "e12 r3" (atomic)')
    p.add_argument("--target", default=None, help="answer token to attribute to (default: the model's prediction)")
    p.add_argument("--top", type=int, default=5, help="answers and features listed per hook and position")
    p.add_argument("--examples", type=int, default=3, help="top-activating task prompts shown per feature")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def main(run, args) -> int:
    from sae_ooc.viz.query import format_query, query

    res = query(run, args.prompt, target=args.target, top=args.top, n_examples=args.examples)
    print(json.dumps(res, indent=1) if args.json else format_query(res))
    return 0
