"""`auroralong generate`: continue a text prompt with an RWKV-6 folder, an AuroraLong folder (text only, through its
language model's state) or, without --model, a small random RWKV-6; report the answer, the time and the state's size.

The module is imported when the command line's parser is built: torch and transformers load when the command runs.
"""

import json
import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("prompt", nargs="?", default="The Eiffel tower is in the city of")
    parser.add_argument("--model", help="a save_pretrained folder; absent: a small random model")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    """Continue a text prompt: an RWKV-6 folder, an AuroraLong folder (text only, through its language model's
    state) or, without --model, a small random RWKV-6."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..folder_metadata import answer_generation_config
    from ..loading import check_config_folder
    from ..modeling import CACHE_NAME, AuroraLongForConditionalGeneration, Rwkv6Config, Rwkv6ForCausalLM
    from ..processing import RwkvWorldTokenizer

    if args.model:
        check_config_folder(args.model)  # a clear error for a path that is not a model folder (not a Hub id)
        try:
            # AutoModelForCausalLM maps an AuroraLong config to AuroraLongForConditionalGeneration (registration)
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
            tokenizer = AutoTokenizer.from_pretrained(args.model)
        except SafetensorError as error:  # a damaged weights file; its message does not say which folder
            raise ValueError(f"{args.model}: cannot load the model: {error}") from None
        source = args.model
    else:
        torch.manual_seed(args.seed)
        config = Rwkv6Config(hidden_size=256, num_hidden_layers=4)
        model = Rwkv6ForCausalLM(config).to(getattr(torch, args.dtype))
        tokenizer = RwkvWorldTokenizer()
        model.generation_config = answer_generation_config(tokenizer)
        source = "a small random RWKV-6 (4 layers, 256 wide; random weights, so the text is gibberish)"
    model.eval()
    is_auroralong = isinstance(model, AuroraLongForConditionalGeneration)
    language_model = model.model.language_model if is_auroralong else model.model

    inputs = tokenizer(args.prompt, return_tensors="pt")
    start = time.perf_counter()
    with torch.inference_mode():
        # end of sequence and padding: the folder's generation_config.json (the end of an answer, "\n\n")
        output = model.generate(
            **inputs, max_new_tokens=args.max_new_tokens, do_sample=args.sample, return_dict_in_generate=True,
        )
    seconds = time.perf_counter() - start
    new_tokens = output.sequences[0, inputs["input_ids"].shape[1]:]
    state = getattr(output, CACHE_NAME)
    state_bytes = state.nbytes
    report = {
        "model": source,
        "model_class": type(model).__name__,
        "prompt": args.prompt,
        "answer": tokenizer.decode(new_tokens, skip_special_tokens=True),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "new_tokens": int(new_tokens.numel()),
        "seconds": round(seconds, 3),
        "state_bytes": state_bytes,
        "wkv_backend": language_model.wkv_backend(model.device),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['prompt']}{report['answer']}")
        print(f"-- {source}; {report['prompt_tokens']} prompt + {report['new_tokens']} new tokens in "
              f"{seconds:.2f} s; recurrent state {state_bytes / 2**20:.2f} MiB ({report['wkv_backend']} WKV)",
              file=sys.stderr)
    return 0

