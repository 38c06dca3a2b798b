#!/usr/bin/python3
"""Reference data for the image tests (tests/image/image_tests.cpp).

Generates a varied set of JPEG/PNG files and, for each, what the Hugging Face image
processors would feed a vision tower. Pillow is the independent reference for everything
that is not plain array arithmetic: it decodes the files, converts them to RGB and does all
resizing. The transformers steps around it (size computation, center crop, LLaVA padding,
rescale, normalize) are re-implemented here with numpy, line by line after
transformers/image_transforms.py and the CLIP/SigLIP/LLaVA image processors, so this script
runs without transformers installed.

One deliberate deviation from transformers is mirrored here: images are always treated as
channels-last (transformers guesses the layout, and mistakes an image 1 or 3 pixels high for
channels-first unless input_data_format is passed). See engine/image/README.md.

Also written: files that Pillow cannot produce (16-bit, 1/2/4-bit, tRNS, Adam7-interlaced,
split-IDAT and short-palette PNGs) by a small PNG encoder below, and direct Pillow resize
results for every filter.

Outputs (under OUT_DIR): images/, configs/ (preprocessor_config.json files), ref/ (zlib-
compressed raw arrays: .rgb.z uint8 HWC, .native.z uint8 HWC, .f32.z float32 CHW), resize/
(raw uint8) and manifest.json describing them all.

Usage: make_reference.py OUT_DIR     (needs Debian's python3-pil and python3-numpy)
"""
import hashlib
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]
RESCALE = 0.00392156862745098


def clip_config(shortest=None, hw=None, crop=(224, 224), resample=3, **extra):
    c = {"image_processor_type": "CLIPImageProcessor", "do_resize": True,
         "size": {"shortest_edge": shortest} if shortest else {"height": hw[0], "width": hw[1]},
         "resample": resample, "do_center_crop": True,
         "crop_size": {"height": crop[0], "width": crop[1]}, "do_rescale": True,
         "rescale_factor": RESCALE, "do_normalize": True, "image_mean": OPENAI_CLIP_MEAN,
         "image_std": OPENAI_CLIP_STD, "do_convert_rgb": True}
    c.update(extra)
    return c


def siglip_config(h, w, resample=3, **extra):
    c = {"image_processor_type": "SiglipImageProcessor", "do_resize": True,
         "size": {"height": h, "width": w}, "resample": resample, "do_rescale": True,
         "rescale_factor": RESCALE, "do_normalize": True, "image_mean": HALF, "image_std": HALF,
         "processor_class": "SiglipProcessor"}
    c.update(extra)
    return c


CONFIGS = {
    "clip224": clip_config(shortest=224),
    # LLaVA-1.5 (llava-hf): CLIP ViT-L/14-336 preprocessing.
    "clip336": clip_config(shortest=336, crop=(336, 336), processor_class="LlavaProcessor"),
    "clip224_bilinear": clip_config(shortest=224, resample=2),
    # Legacy int sizes, everything else from CLIPImageProcessor's defaults.
    "clip_legacy": {"feature_extractor_type": "CLIPFeatureExtractor", "size": 224,
                    "crop_size": 224},
    # Crop larger than the resized image on one axis: transformers zero-pads.
    "clip_crop_pad": clip_config(shortest=200, crop=(256, 232)),
    "clip_fixed_nearest": clip_config(hw=(80, 96), crop=(64, 72), resample=0),
    "clip_no_rescale": clip_config(shortest=64, crop=(64, 64), do_rescale=False),
    "siglip384": siglip_config(384, 384),
    "siglip224": siglip_config(224, 224),
    "siglip224_bilinear": siglip_config(224, 224, resample=2),
    "siglip_lanczos": siglip_config(72, 100, resample=1),
    "siglip_box": siglip_config(64, 64, resample=4),
    "siglip_hamming": siglip_config(70, 90, resample=5),
    "llava_pad336": dict(clip_config(shortest=336, crop=(336, 336)),
                         image_processor_type="LlavaImageProcessor", do_pad=True),
}
# Configs run on every image; the rest only on the "core" images (decode of every image is
# checked byte for byte on its own, so the exotic formats need not go through every config).
ALL_IMAGE_CONFIGS = ["clip224", "siglip_lanczos"]


# ---------------------------------------------------------------------------------------------
# transformers' steps, re-implemented (channels-last uint8 arrays)

def size_dict(value, default_to_square):
    """image_processing_utils.get_size_dict."""
    if isinstance(value, int):
        return {"height": value, "width": value} if default_to_square else {"shortest_edge": value}
    if isinstance(value, (list, tuple)):
        return {"height": value[0], "width": value[1]}
    return dict(value)


def get_resize_output_image_size(height, width, size):
    """image_transforms.get_resize_output_image_size(default_to_square=False)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def center_crop(image, crop_height, crop_width):
    """image_transforms.center_crop, channels-last."""
    orig_height, orig_width = image.shape[:2]
    top = (orig_height - crop_height) // 2
    bottom = top + crop_height
    left = (orig_width - crop_width) // 2
    right = left + crop_width
    if top >= 0 and bottom <= orig_height and left >= 0 and right <= orig_width:
        return image[top:bottom, left:right]
    new_height = max(crop_height, orig_height)
    new_width = max(crop_width, orig_width)
    new_image = np.zeros_like(image, shape=(new_height, new_width) + image.shape[2:])
    top_pad = -(-(new_height - orig_height) // 2)  # ceil
    left_pad = -(-(new_width - orig_width) // 2)
    new_image[top_pad:top_pad + orig_height, left_pad:left_pad + orig_width] = image
    top += top_pad
    bottom += top_pad
    left += left_pad
    right += left_pad
    return new_image[max(0, top):min(new_height, bottom), max(0, left):min(new_width, right)]


def pad_to_square(image, background):
    """LlavaImageProcessor.pad_to_square, channels-last."""
    height, width = image.shape[:2]
    if height == width:
        return image
    max_dim = max(height, width)
    result = np.zeros((max_dim, max_dim, image.shape[2]), dtype=image.dtype)
    for i, color in enumerate(background):
        result[:, :, i] = color
    if width > height:
        start = (max_dim - height) // 2
        result[start:start + height, :, :] = image
    else:
        start = (max_dim - width) // 2
        result[:, start:start + width, :] = image
    return result


def hf_pixel_values(pil_image, cfg):
    ptype = cfg.get("image_processor_type") or cfg.get("feature_extractor_type")
    kind = ("siglip" if ptype.startswith("Siglip") else
            "llava" if ptype.startswith("Llava") else "clip")
    siglip = kind == "siglip"
    mean = cfg.get("image_mean", HALF if siglip else OPENAI_CLIP_MEAN)
    std = cfg.get("image_std", HALF if siglip else OPENAI_CLIP_STD)
    resample = cfg.get("resample", 3)

    image = pil_image if pil_image.mode == "RGB" else pil_image.convert("RGB")  # convert_to_rgb
    arr = np.array(image)
    if kind == "llava" and cfg.get("do_pad", False):
        arr = pad_to_square(arr, tuple(int(x * 255) for x in mean))
    if cfg.get("do_resize", True):
        size = size_dict(cfg.get("size", {"height": 224, "width": 224} if siglip
                                 else {"shortest_edge": 224}), default_to_square=False)
        if siglip:
            out_h, out_w = size["height"], size["width"]
        elif "shortest_edge" in size:
            out_h, out_w = get_resize_output_image_size(arr.shape[0], arr.shape[1],
                                                        size["shortest_edge"])
        else:
            out_h, out_w = size["height"], size["width"]
        arr = np.array(Image.fromarray(arr).resize((out_w, out_h), resample=resample))
    if not siglip and cfg.get("do_center_crop", True):
        crop = size_dict(cfg.get("crop_size", {"height": 224, "width": 224}),
                         default_to_square=True)
        arr = center_crop(arr, crop["height"], crop["width"])
    if cfg.get("do_rescale", True):  # image_transforms.rescale
        arr = (arr.astype(np.float64) * cfg.get("rescale_factor", 1 / 255)).astype(np.float32)
    if cfg.get("do_normalize", True):  # image_transforms.normalize
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32)
        arr = (arr - np.array(mean, dtype=arr.dtype)) / np.array(std, dtype=arr.dtype)
    arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------------
# Test images

def photo(width, height, seed):
    """Smooth gradients, oscillations, hard checker edges and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 127 + 120 * np.sin(x / (5.0 + seed % 7)) * np.cos(y / 9.0)
    g = 255 * x / max(width - 1, 1)
    b = 255.0 * (((x // 13) + (y // 11)) % 2)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 14, (height, width, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def pack_row(samples, depth):
    """One row of sample values (1-D ints) → bytes at the given bit depth."""
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per_byte = 8 // depth
    padded = np.zeros(-(-len(samples) // per_byte) * per_byte, dtype=np.int64)
    padded[:len(samples)] = samples
    out = bytearray()
    for i in range(0, len(padded), per_byte):
        v = 0
        for s in padded[i:i + per_byte]:
            v = (v << depth) | int(s)
        out.append(v)
    return bytes(out)


def filter_rows(rows, bpp):
    """Filters each row with a type cycling through None/Sub/Up/Average/Paeth."""
    out = bytearray()
    prev = bytes(len(rows[0])) if rows else b""
    for i, row in enumerate(rows):
        ftype = i % 5
        out.append(ftype)
        for j, v in enumerate(row):
            left = row[j - bpp] if j >= bpp else 0
            up = prev[j]
            upleft = prev[j - bpp] if j >= bpp else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = left
            elif ftype == 2:
                pred = up
            elif ftype == 3:
                pred = (left + up) // 2
            else:
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else upleft)
            out.append((v - pred) & 0xFF)
        prev = row
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def encode_png(samples, depth, color_type, palette=None, trns=None, interlace=False,
               idat_size=None):
    """samples: uint array (h, w, channels) of values at `depth` bits (indices for palette)."""
    height, width, channels = samples.shape
    bpp = max(1, channels * depth // 8)

    def image_data(sub):
        rows = [pack_row(sub[y].reshape(-1), depth) for y in range(sub.shape[0])]
        return filter_rows(rows, bpp)

    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += image_data(sub)
    else:
        raw = image_data(samples)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, int(interlace)))
    if palette is not None:
        out += png_chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).reshape(-1)))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    compressed = zlib.compress(raw, 9)
    step = idat_size or len(compressed)
    for i in range(0, len(compressed), step):
        out += png_chunk(b"IDAT", compressed[i:i + step])
    return out + png_chunk(b"IEND", b"")


def pil_bytes(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_images():
    """(name, file bytes, expected probe fields, core) for every test image."""
    rng = np.random.default_rng(7)
    images = []

    def add(name, data, channels, core=False):
        images.append((name, data, channels, core))

    # Plain RGB in many shapes.
    add("tiny_1x1.png", pil_bytes(Image.fromarray(photo(1, 1, 1)), "PNG"), 3, core=True)
    add("tiny_3x2.png", pil_bytes(Image.fromarray(photo(3, 2, 2)), "PNG"), 3, core=True)
    add("tiny_2x3.jpg", pil_bytes(Image.fromarray(photo(2, 3, 3)), "JPEG", quality=95), 3, core=True)
    add("huge_3000x2000.jpg",
        pil_bytes(Image.fromarray(photo(3000, 2000, 4)), "JPEG", quality=90), 3, core=True)
    add("portrait_480x640.jpg",
        pil_bytes(Image.fromarray(photo(480, 640, 5)), "JPEG", quality=85), 3, core=True)
    add("landscape_640x427.png", pil_bytes(Image.fromarray(photo(640, 427, 6)), "PNG"), 3, core=True)
    add("square_500x500_progressive.jpg",
        pil_bytes(Image.fromarray(photo(500, 500, 7)), "JPEG", quality=80, progressive=True), 3,
        core=True)
    add("odd_333x219_optimized.jpg",
        pil_bytes(Image.fromarray(photo(333, 219, 8)), "JPEG", quality=75, optimize=True), 3,
        core=True)
    add("subsample444_300x200.jpg",
        pil_bytes(Image.fromarray(photo(300, 200, 9)), "JPEG", quality=92, subsampling=0), 3)
    add("subsample422_301x199.jpg",
        pil_bytes(Image.fromarray(photo(301, 199, 10)), "JPEG", quality=88, subsampling=1), 3)
    add("panorama_1500x90.png", pil_bytes(Image.fromarray(photo(1500, 90, 11)), "PNG"), 3, core=True)
    add("tall_60x700.jpg", pil_bytes(Image.fromarray(photo(60, 700, 12)), "JPEG", quality=90), 3,
        core=True)
    add("upscale_150x100.png", pil_bytes(Image.fromarray(photo(150, 100, 13)), "PNG"), 3, core=True)

    # Gray, alpha and palette images written by Pillow.
    gray = photo(320, 240, 14)[:, :, 0]
    add("gray_L_320x240.png", pil_bytes(Image.fromarray(gray, "L"), "PNG"), 1, core=True)
    add("gray_320x240.jpg", pil_bytes(Image.fromarray(gray, "L"), "JPEG", quality=90), 1)
    add("gray_progressive_257x129.jpg",
        pil_bytes(Image.fromarray(photo(257, 129, 15)[:, :, 1], "L"), "JPEG", progressive=True), 1)
    la = np.stack([photo(200, 150, 16)[:, :, 0], rng.integers(0, 256, (150, 200))], -1)
    add("la_200x150.png", pil_bytes(Image.fromarray(la.astype(np.uint8), "LA"), "PNG"), 2)
    rgba = np.concatenate([photo(256, 192, 17),
                           (np.arange(256)[None, :, None] * np.ones((192, 1, 1))).astype(np.uint8)],
                          axis=-1)
    rgba[::7, ::5, 3] = 0  # fully transparent pixels keep their (visible) RGB under convert
    add("rgba_256x192.png", pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), 4, core=True)
    quant = Image.fromarray(photo(200, 120, 18)).quantize(colors=64)
    add("palette_200x120.png", pil_bytes(quant, "PNG"), 3, core=True)
    add("palette_trns_index_200x120.png", pil_bytes(quant, "PNG", transparency=5), 4)
    pal_alpha = bytes(int(v) for v in np.linspace(0, 255, 64))
    add("palette_trns_bytes_200x120.png", pil_bytes(quant, "PNG", transparency=pal_alpha), 4)

    # JPEG specials.
    cmyk = np.concatenate([photo(180, 120, 19), photo(180, 120, 20)[:, :, :1]], axis=-1)
    add("cmyk_180x120.jpg", pil_bytes(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=90), 3)
    exif = Image.Exif()
    exif[0x0112] = 6
    add("exif_orientation6_160x90.jpg",
        pil_bytes(Image.fromarray(photo(160, 90, 21)), "JPEG", quality=90, exif=exif.tobytes()), 3)

    # PNGs from the encoder above.
    g16 = (np.linspace(0, 65535, 160 * 120).reshape(120, 160, 1)).astype(np.int64)
    g16[::3] = g16[::3] % 300  # many values in 0..299: clamping at 255 is visible
    add("gray16_160x120.png", encode_png(g16, 16, 0), 1)
    rgb16 = photo(97, 61, 22).astype(np.int64) * 257 + rng.integers(0, 257, (61, 97, 3))
    add("rgb16_97x61.png", encode_png(rgb16, 16, 2), 3, core=True)
    la16 = np.stack([rgb16[:, :, 0], rgb16[:, :, 1]], -1)
    add("la16_97x61.png", encode_png(la16, 16, 4), 2)
    rgba16 = np.concatenate([rgb16, rgb16[:, :, :1]], -1)
    add("rgba16_97x61.png", encode_png(rgba16, 16, 6), 4)
    for depth in (1, 2, 4):
        g = rng.integers(0, 1 << depth, (45, 67, 1))
        add(f"gray{depth}bit_67x45.png", encode_png(g, depth, 0), 1)
    pal = rng.integers(0, 256, (16, 3))
    idx4 = rng.integers(0, 16, (50, 75, 1))
    add("palette4bit_75x50.png", encode_png(idx4, 4, 3, palette=pal), 3)
    idx_short = rng.integers(0, 10, (40, 41, 1))  # indices 4..9 are beyond the 4-entry PLTE
    add("palette_short_41x40.png", encode_png(idx_short, 8, 3, palette=pal[:4]), 3)
    g8 = photo(80, 60, 23)[:, :, :1].astype(np.int64)
    add("gray_trns_80x60.png", encode_png(g8, 8, 0, trns=struct.pack(">H", int(g8[0, 0, 0]))), 2)
    c8 = photo(80, 60, 24).astype(np.int64)
    key = struct.pack(">HHH", *(int(v) for v in c8[0, 0]))
    add("rgb_trns_80x60.png", encode_png(c8, 8, 2, trns=key), 4)
    add("interlaced_rgb_257x131.png", encode_png(photo(257, 131, 25).astype(np.int64), 8, 2,
                                                 interlace=True), 3, core=True)
    rgba_i = np.concatenate([photo(33, 17, 26), rng.integers(0, 256, (17, 33, 1))], -1)
    add("interlaced_rgba_33x17.png", encode_png(rgba_i.astype(np.int64), 8, 6, interlace=True), 4)
    add("interlaced_gray16_21x13.png",
        encode_png(rng.integers(0, 400, (13, 21, 1)), 16, 0, interlace=True), 1)
    add("interlaced_palette2bit_19x11.png",
        encode_png(rng.integers(0, 4, (11, 19, 1)), 2, 3, palette=pal[:4], interlace=True), 3)
    add("split_idat_120x80.png",
        encode_png(photo(120, 80, 27).astype(np.int64), 8, 2, idat_size=97), 3)
    return images


RESIZE_SIZES = [(40, 30), (200, 150), (97, 20), (13, 61), (1, 1), (300, 7), (96, 61)]


def write_z(out, fname, data):
    """Reference arrays are stored zlib-compressed (about a quarter of their raw size)."""
    with open(os.path.join(out, fname), "wb") as f:
        f.write(zlib.compress(data, 1))


def main():
    out = sys.argv[1]
    for sub in ("images", "ref", "configs", "resize"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    manifest = {"images": [], "configs": [], "cases": [], "resize": []}

    for name, cfg in CONFIGS.items():
        with open(os.path.join(out, "configs", name + ".json"), "w") as f:
            json.dump(cfg, f, indent=1)
        manifest["configs"].append({"name": name, "file": f"configs/{name}.json"})

    native_mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    for name, data, channels, core in make_images():
        with open(os.path.join(out, "images", name), "wb") as f:
            f.write(data)
        im = Image.open(io.BytesIO(data))
        im.load()
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        rgb_bytes = np.array(rgb).tobytes()
        write_z(out, f"ref/{name}.rgb.z", rgb_bytes)
        native_file = None  # decode() before RGB conversion, where it differs from RGB
        if channels != 3:
            native = im if im.mode == native_mode[channels] else im.convert(native_mode[channels])
            native_file = f"ref/{name}.native.z"
            write_z(out, native_file, np.array(native).tobytes())
        key = hashlib.sha256(b"iris.image.v1\0" + struct.pack("<III", im.width, im.height, 3) +
                             rgb_bytes).hexdigest()[:32]
        manifest["images"].append({
            "name": name, "file": f"images/{name}",
            "format": "jpeg" if im.format == "JPEG" else "png",
            "width": im.width, "height": im.height, "channels": channels,
            "progressive": bool(im.info.get("progressive") or im.info.get("interlace")),
            "exif_orientation": int(im.getexif().get(0x0112, 1)),
            "rgb": f"ref/{name}.rgb.z", "native": native_file, "content_hash": key})
        for cname in CONFIGS:
            if not core and cname not in ALL_IMAGE_CONFIGS:
                continue
            pv = hf_pixel_values(im, CONFIGS[cname])
            fname = f"ref/{name}__{cname}.f32.z"
            write_z(out, fname, pv.astype("<f4").tobytes())
            manifest["cases"].append({"image": name, "config": cname, "file": fname,
                                      "shape": list(pv.shape)})

    # Pillow's resize on its own: every filter, L and RGB, down- and up-scaling.
    src_rgb = photo(97, 61, 30)
    for mode, src in (("RGB", src_rgb), ("L", src_rgb[:, :, 1].copy())):
        src_file = f"resize/source_{mode}.u8"
        src.tofile(os.path.join(out, src_file))
        for resample in range(6):
            for w, h in RESIZE_SIZES:
                res = np.array(Image.fromarray(src, mode).resize((w, h), resample=resample))
                fname = f"resize/{mode}_{resample}_{w}x{h}.u8"
                res.tofile(os.path.join(out, fname))
                manifest["resize"].append({
                    "source": src_file, "width": src.shape[1], "height": src.shape[0],
                    "channels": 3 if mode == "RGB" else 1, "filter": resample,
                    "out_width": w, "out_height": h, "file": fname})

    with open(os.path.join(out, "manifest.json.tmp"), "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(out, "manifest.json.tmp"), os.path.join(out, "manifest.json"))
    print(f"make_reference: {len(manifest['images'])} images, {len(manifest['configs'])} configs, "
          f"{len(manifest['cases'])} pixel_values cases, {len(manifest['resize'])} resize cases")


if __name__ == "__main__":
    main()
