# Sourced by the device scripts: one large file carried to the lent GPU machine in parts, one call each (a
# call carries 64 MiB of working tree, the tracked tree takes ~48), while the machine stays warm.
#   split_parts FILE PARTS DIR   here: DIR-p0 .. DIR-p{PARTS-1} hold FILE's parts, DIR-p0 its sha256 too
#   stage_parts DIR STAGE        there: copies whatever parts this call carried into STAGE
#   join_parts STAGE NAME OUT    there: STAGE's parts of NAME -> OUT/NAME, checked against the sha256

split_parts() {
    local file=$1 parts=$2 dir=$3 name i
    name=$(basename "$file")
    for i in $(seq 0 $((parts - 1))); do rm -rf "$dir-p$i" && mkdir -p "$dir-p$i"; done
    split -n "$parts" -d -a 1 "$file" "$dir-p0/$name.part-"
    for i in $(seq 1 $((parts - 1))); do mv "$dir-p0/$name.part-$i" "$dir-p$i/"; done
    (cd "$(dirname "$file")" && sha256sum "$name") > "$dir-p0/$name.sha256"
}

stage_parts() {
    local dir=$1 stage=$2 part
    mkdir -p "$stage"
    for part in "$dir"-p*; do [ -d "$part" ] && cp "$part"/* "$stage/"; done
    ls "$stage"
}

join_parts() {
    local stage=$1 name=$2 out=$3
    if [ -f "$out/$name" ] && (cd "$out" && sha256sum --status -c "$name.sha256" 2>/dev/null); then
        return 0
    fi
    mkdir -p "$out"
    cat "$stage/$name".part-* > "$out/$name"
    cp "$stage/$name.sha256" "$out/"
    (cd "$out" && sha256sum -c "$name.sha256")
}
