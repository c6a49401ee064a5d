"""Model code: backbone (CNN trunks), visual (pixel tokens), text (BERT), model (PixelBert), heads."""
