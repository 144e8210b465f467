# Sourced by benches/broker/run.sh and benches/eos/run.sh: weir's copy of
# topology/parking.yaml for one bench run.
#
#   parking_topology REPO WEIR_BIN APP INPUT GUARANTEE OUT [SED_EXPR...] [-- LINE...]
#
# Writes OUT: the shipped topology with the app's own names (APP as
# application_id, INPUT as the source topic, APP-dlq, APP-hourly, APP-lots)
# and GUARANTEE, then each SED_EXPR. Checks that every replaced value and
# each LINE is in OUT (topology/parking.yaml changing shape must not go
# unnoticed) and that `weir validate` accepts it; otherwise says why on
# stderr and returns 1.
parking_topology() {
  local repo="$1" weir="$2" app="$3" input="$4" g="$5" out="$6" w
  shift 6
  local seds=()
  while (($#)) && [[ "$1" != -- ]]; do
    seds+=(-e "$1")
    shift
  done
  [[ "${1:-}" == -- ]] && shift
  sed -e "s/^application_id: parking-hourly\$/application_id: $app/" \
    -e "s/parking_status_dlq/$app-dlq/g" \
    -e "s/parking_status/$input/g" \
    -e "s/parking_hourly_avg/$app-hourly/g" \
    -e "s/parking_lot_status/$app-lots/g" \
    -e "s/^processing_guarantee:.*/processing_guarantee: $g/" \
    "${seds[@]}" \
    "$repo/topology/parking.yaml" >"$out" || return 1
  for w in "application_id: $app" "processing_guarantee: $g" "topic: $input" "dead_letter: $app-dlq" \
      "topic: $app-hourly" "topic: $app-lots" "$@"; do
    grep -qF -- "$w" "$out" || { echo "topology/parking.yaml changed shape: '$w' missing in $out" >&2; return 1; }
  done
  "$weir" validate "$out" >"$out.validate" 2>&1 || { cat "$out.validate" >&2; echo "weir validate $out failed" >&2; return 1; }
}
