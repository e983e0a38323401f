"""``hypernoise demo``: a web page with base and HyperNoise side by side, and its API (docs/demo.md)."""

from __future__ import annotations


def add_arguments(p) -> None:
    from hypernoise.cli.common import add_model_args, add_passes_arg, add_reward_weights_arg, int_arg, positive_int

    add_model_args(p)
    p.add_argument("--adapter", default=None,
                   help="adapter folder or Hub id OWNER/NAME[@REVISION][/SUBFOLDER] (default: the HyperNoise adapter "
                        "that ships for the built-in shapes world; needed with any other generator)")
    p.add_argument("--reward", default=None,
                   help="reward spec the images are scored with and ReNO / best-of-N optimise (default: the "
                        "adapter's, else the generator's)")
    add_reward_weights_arg(p)
    add_passes_arg(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network, "
                        "without authentication)")
    p.add_argument("--port", type=int_arg(1, 65535, what="a port from 1 to 65535"), default=7860,
                   help="port to serve on (default 7860)")
    p.add_argument("--share", action="store_true",
                   help="also open a temporary public link through Gradio's share servers (off unless asked: "
                        "traffic then leaves this machine)")
    p.add_argument("--max-steps", type=positive_int, default=50, help="the most generator steps a request may ask")
    p.add_argument("--max-budget", type=positive_int, default=50,
                   help="the most ReNO iterations / best-of-N candidates a request may ask")


def run(args) -> int:
    from hypernoise.cli.common import configure_threads, hypernet_passes, model_config, reward_weights
    from hypernoise.demo import DemoConfig, build_app, check_port, import_gradio, load_demo, serve
    from hypernoise.rewards import parse_spec

    import_gradio()  # the extra missing: one line with the install command, before any model loads
    check_port(args.host, args.port)
    if args.reward is not None:
        parse_spec(args.reward)
    cfg = DemoConfig(model=model_config(args), adapter=args.adapter, reward=args.reward,
                     reward_weights=reward_weights(args), passes=hypernet_passes(args), max_steps=args.max_steps,
                     max_budget=args.max_budget)
    configure_threads(args)
    demo = load_demo(cfg)
    print(f"hypernoise demo: generator {demo.generator.name} on {demo.generator.device}, adapter {demo.adapter}, "
          f"reward {demo.reward.spec()}", flush=True)
    serve(build_app(demo), host=args.host, port=args.port, share=args.share)
    return 0
