"""Identicon avatars drawn locally from an email digest (no internet needed)."""


def identicon_svg(digest: str, size: int) -> str:
    """A 5x5 mirrored identicon as SVG, coloured from the digest."""
    hue = int(digest[:3], 16) % 360
    color = f"hsl({hue}, 55%, 50%)"
    bits = int(digest[3:18], 16)
    cells = []
    for row in range(5):
        for col in range(3):
            if bits & 1:
                for x in {col, 4 - col}:
                    cells.append(f'<rect x="{x}" y="{row}" width="1" height="1"/>')
            bits >>= 1
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="-0.5 -0.5 6 6" shape-rendering="crispEdges">'
        f'<rect x="-0.5" y="-0.5" width="6" height="6" fill="#f0f0f0"/>'
        f'<g fill="{color}">{"".join(cells)}</g></svg>'
    )
