"""``hypernoise push-to-hub ADAPTER_DIR NAME``: upload an adapter folder with its model card."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("adapter", metavar="ADAPTER_DIR", help="the adapter folder training wrote (RUN/adapter or RUN/best)")
    p.add_argument("hub_model_id", metavar="NAME", help="the model repo: NAME or OWNER/NAME (created if needed)")
    p.add_argument("--hub-private", action="store_true", help="create the repo private")
    p.add_argument("--commit-message", default=None, help="the Hub commit's message")


def run(args) -> int:
    from hypernoise.publish import push_to_hub

    url = push_to_hub(args.adapter, args.hub_model_id, private=args.hub_private, commit_message=args.commit_message)
    print(f"pushed {args.adapter} to {url}")
    return 0
