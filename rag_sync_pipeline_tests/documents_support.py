"""Real PDF and DOCX files made in the test, so the converters are tested on what Word and PDF writers emit."""

from __future__ import annotations

import io


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def pdf_bytes(pages: list[list[str]], title: str = "") -> bytes:
    """A valid PDF 1.4 file: one page per entry, each line drawn as text in Helvetica, a correct xref table."""
    page_ids = [3 + 2 * i for i in range(len(pages))]
    font_id = 3 + 2 * len(pages)
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] /Count {len(pages)} >>".encode(),
        font_id: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for page_id, lines in zip(page_ids, pages, strict=True):
        drawn = " ".join(f"{_pdf_string(line)} Tj 0 -16 Td" for line in lines)
        stream = f"BT /F1 12 Tf 72 720 Td {drawn} ET".encode("latin-1")
        objects[page_id] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {page_id + 1} 0 R "
                            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>").encode()
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    info_id = font_id + 1
    objects[info_id] = f"<< /Title {_pdf_string(title)} >>".encode("latin-1")

    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, objects[number]))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for number in sorted(objects):
        out.write(b"%010d 00000 n \n" % offsets[number])
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, info_id, xref))
    return out.getvalue()


def docx_bytes(title: str = "Incident review") -> bytes:
    """A Word document with a title property, headings of two levels, a bullet list and a table."""
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.add_heading("Incident review", level=1)
    document.add_paragraph("The ingest gateway dropped 2% of events for forty minutes.")
    document.add_heading("Timeline", level=2)
    document.add_paragraph("Alert fired at 09:12 UTC", style="List Bullet")
    document.add_paragraph("Rollback finished at 09:52 UTC", style="List Bullet")
    document.add_heading("Owners", level=2)
    table = document.add_table(rows=3, cols=2)
    for row, (team, person) in zip(table.rows, [("Team", "Owner"), ("Ingest", "Ana | Bo"), ("SRE", "Chen")],
                                   strict=True):
        row.cells[0].text, row.cells[1].text = team, person
    document.add_paragraph("Follow-ups are tracked in OPS-1234.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
