"""The PyTorch eager side of `make bench`: the training loop people would otherwise write, timed the way
`rifle bench` times rifle's, printing one JSON line in the same form.

  train   torchvision ResNet, SGD with momentum, cross-entropy, on one pre-generated batch (data loading
          excluded); per step: zero_grad, forward, loss, backward, step, and the loss and top-1 read back
          to the host as a loop that logs them does (rifle reads the loss and top-1/top-5 every step too).
  loader  torchvision ImageFolder + DataLoader: Resize(shorter) -> RandomCrop -> RandomHorizontalFlip ->
          ToTensor -> Normalize (ImageNet statistics), the transforms of bench/pipelines/loader.yaml.
  weights writes a torchvision ResNet's state_dict (random init) as a .pth file, for the start-up figure.
  jpegs   writes a folder of JPEGs in class sub-folders (ImageFolder layout), for the loader figure.
"""
import argparse
import json
import os
import sys
import time


def synchronize(device):
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)


def train(args):
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = getattr(torchvision.models, args.arch)(num_classes=args.classes).to(device)
    model.train()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    criterion = torch.nn.CrossEntropyLoss()
    images = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    amp = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.amp]
    # fp16 needs loss scaling, as rifle's `amp: fp16` does; bf16 does not.
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)

    def step():
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss.item()
        (logits.argmax(1) == labels).sum().item()

    for _ in range(args.warmup):
        step()
    seconds = []
    for _ in range(args.steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return {
        "what": "train",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch,
        "steps": args.steps,
        "images_per_s": args.steps * args.batch / sum(seconds),
        "seconds": seconds,
    }


def loader(args):
    import torch
    import torchvision
    from torchvision import transforms

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    transform = transforms.Compose([
        transforms.Resize(args.resize),
        transforms.RandomCrop(args.crop),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    dataset = torchvision.datasets.ImageFolder(args.folder, transform=transform)
    # persistent_workers: the workers outlive an epoch, PyTorch's fastest setting (rifle starts new ones).
    data = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                       num_workers=args.workers, persistent_workers=args.workers > 0)
    seconds, images, read = [], 0, 0
    while True:
        clock = time.perf_counter()
        for inputs, targets in data:
            if read >= args.warmup:
                seconds.append(time.perf_counter() - clock)
                images += len(targets)
            read += 1
            if read == args.warmup + args.steps:
                return {
                    "what": "loader",
                    "device": "cpu",
                    "threads": torch.get_num_threads(),
                    "batch_size": args.batch,
                    "steps": args.steps,
                    "images_per_s": images / sum(seconds),
                    "seconds": seconds,
                }
            clock = time.perf_counter()


def weights(args):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, args.arch)()
    torch.save(model.state_dict(), args.out)
    return {"what": "weights", "path": args.out, "bytes": os.path.getsize(args.out)}


def jpegs(args):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    wide, narrow = args.long, args.short
    for i in range(args.count):
        cls = i % args.classes
        folder = os.path.join(args.out, f"class{cls}")
        os.makedirs(folder, exist_ok=True)
        # Landscape and portrait in turn; smooth colour fields plus noise, so that decoding is not trivial.
        w, h = (wide, narrow) if i % 2 == 0 else (narrow, wide)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([np.sin(x / (7 + cls) + i), np.cos(y / (11 + cls)), np.sin((x + y) / 13)], -1)
        pixels = 127 + 80 * base + rng.normal(0, 20, (h, w, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)
    return {"what": "jpegs", "path": args.out, "count": args.count}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--arch", default="resnet18")
    t.add_argument("--size", type=int, default=112)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--classes", type=int, default=100)
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--device", default="cpu")
    t.add_argument("--amp", choices=["off", "fp16", "bf16"], default="off")
    t.add_argument("--channels-last", action="store_true")
    t.set_defaults(run=train)
    l = sub.add_parser("loader")
    l.add_argument("folder")
    l.add_argument("--resize", type=int, default=128)
    l.add_argument("--crop", type=int, default=112)
    l.add_argument("--batch", type=int, default=32)
    l.add_argument("--workers", type=int, default=2)
    l.add_argument("--threads", type=int, default=2)
    l.add_argument("--warmup", type=int, default=4)
    l.add_argument("--steps", type=int, default=32)
    l.set_defaults(run=loader)
    w = sub.add_parser("weights")
    w.add_argument("out")
    w.add_argument("--arch", default="resnet50")
    w.set_defaults(run=weights)
    j = sub.add_parser("jpegs")
    j.add_argument("out")
    j.add_argument("--count", type=int, default=512)
    j.add_argument("--classes", type=int, default=4)
    j.add_argument("--short", type=int, default=256)
    j.add_argument("--long", type=int, default=320)
    j.set_defaults(run=jpegs)
    args = parser.parse_args()
    print(json.dumps(args.run(args)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
